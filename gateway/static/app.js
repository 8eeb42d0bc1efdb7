// The gateway's web page: draw, upload or photograph a digit; show what the model reads;
// send feedback. Plain JavaScript, no library; it talks to the same /v1 API as any client.
"use strict";

(() => {
  const KEY_STORAGE = "mnist-gateway-api-key";
  // After a stroke, wait this long for another before asking (a 7 is often two strokes).
  const PREDICT_DELAY_MS = 600;
  const STATUS_REFRESH_MS = 15000;
  const STROKE_WIDTH = 20;

  const $ = (id) => document.getElementById(id);
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;

  const state = {
    model: meta("gateway-default-model"),
    keysRequired: meta("gateway-api-keys") === "required",
    labelsByVersion: {}, // model -> {version: [label, ...]}
    prediction: null, // {id, digit, model}
    strokes: 0,
    request: 0,
    controller: null,
    timer: null,
    sentUrl: null,
  };

  class GatewayError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Words for answers that carry no gateway message (a proxy's page, a dropped connection).
  function describeStatus(status) {
    if (status === 413) return "The file is too large for the gateway.";
    if (status === 502 || status === 503 || status === 504) {
      return "The model is not available right now; try again in a moment.";
    }
    if (status === 401 || status === 403) return "The gateway needs a valid API key.";
    return "The gateway could not answer this request.";
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.set("X-API-Key", key);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new GatewayError(
        "The gateway cannot be reached: check the connection, or whether the gateway runs.",
        0,
        "network",
      );
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.ok && body !== null) return body;
    const detail = body && body.error ? body.error : {};
    const error = new GatewayError(
      detail.message || describeStatus(response.status),
      response.status,
      detail.code || "",
    );
    if (response.status === 401 || response.status === 403) askForKey(error);
    throw error;
  }

  // --- API key ----------------------------------------------------------------------
  function askForKey(error) {
    const form = $("key-form");
    $("key-message").textContent =
      error && error.status === 403
        ? `The gateway did not accept that key (${error.message}). Type another.`
        : "This gateway needs an API key. It is kept in this browser tab only, " +
          "and sent with each request.";
    if (form.hidden) {
      form.hidden = false;
      $("key-input").focus();
    }
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    $("key-form").hidden = true;
    refreshStatus();
  });

  // --- Drawing ----------------------------------------------------------------------
  const pad = $("pad");
  const ink = pad.getContext("2d");
  let stroke = null;

  function clearPad() {
    ink.fillStyle = "#ffffff";
    ink.fillRect(0, 0, pad.width, pad.height);
    ink.lineCap = "round";
    ink.lineJoin = "round";
    ink.strokeStyle = "#000000";
    ink.fillStyle = "#000000";
    ink.lineWidth = STROKE_WIDTH;
    state.strokes = 0;
    pad.dataset.strokes = "0";
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * pad.width) / box.width,
      ((event.clientY - box.top) * pad.height) / box.height,
    ];
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    clearTimeout(state.timer);
    const [x, y] = padPoint(event);
    stroke = { id: event.pointerId, x, y };
    ink.beginPath();
    ink.arc(x, y, STROKE_WIDTH / 2, 0, 2 * Math.PI);
    ink.fill();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    ink.beginPath();
    ink.moveTo(stroke.x, stroke.y);
    for (const moved of events.length ? events : [event]) {
      [stroke.x, stroke.y] = padPoint(moved);
      ink.lineTo(stroke.x, stroke.y);
    }
    ink.stroke();
  });

  function endStroke(event) {
    if (!stroke || event.pointerId !== stroke.id) return;
    stroke = null;
    state.strokes += 1;
    pad.dataset.strokes = String(state.strokes);
    clearTimeout(state.timer);
    state.timer = setTimeout(predictDrawing, PREDICT_DELAY_MS);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function predictDrawing() {
    clearTimeout(state.timer);
    const strokes = state.strokes;
    pad.toBlob((blob) => predict(blob, "drawing.png", { source: "drawing", strokes }), "image/png");
  }

  $("predict-drawing").addEventListener("click", predictDrawing);
  $("clear").addEventListener("click", () => {
    clearTimeout(state.timer);
    clearPad();
  });

  // --- Files: upload, camera, drag and drop ------------------------------------------
  function predictFile(file) {
    if (file) predict(file, file.name || "upload", { source: "file", strokes: "" });
  }
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (event) => {
      predictFile(event.target.files[0]);
      event.target.value = ""; // the same file again is a new choice
    });
  }
  const dropZone = $("input-panel");
  dropZone.addEventListener("dragover", (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    predictFile(event.dataTransfer.files[0]);
  });

  // --- Predicting ---------------------------------------------------------------------
  function modelPath(suffix = "") {
    return `/v1/models/${encodeURIComponent(state.model)}${suffix}`;
  }

  async function predict(blob, filename, origin) {
    const request = ++state.request;
    if (state.controller) state.controller.abort();
    state.controller = new AbortController();
    $("busy").hidden = false;
    const form = new FormData();
    form.append("file", blob, filename);
    try {
      const body = await api(modelPath("/predict/image?return_input=true"), {
        method: "POST",
        body: form,
        signal: state.controller.signal,
      });
      if (request === state.request) showResult(body, blob, origin);
    } catch (error) {
      if (request === state.request && error.name !== "AbortError") showError(error.message);
    } finally {
      if (request === state.request) $("busy").hidden = true;
    }
  }

  // "a 7", "an 8".
  function aDigit(digit) {
    return `${digit === 8 ? "an" : "a"} ${digit}`;
  }

  function percent(probability) {
    return `${(probability * 100).toFixed(1)}%`;
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    $("result").hidden = true;
    $("placeholder").hidden = true;
    state.prediction = null;
  }

  function showResult(body, blob, origin) {
    const prediction = body.predictions[0];
    const digit = prediction.class;
    state.prediction = { id: prediction.prediction_id, digit, model: body.model };
    $("error").hidden = true;
    $("placeholder").hidden = true;
    $("digit").textContent = String(digit);
    $("confidence").textContent = `with ${percent(prediction.confidence)} confidence`;
    const labels = (state.labelsByVersion[body.model] || {})[body.version] || [];
    const labelText = labels.length ? ` (label ${labels.join(", ")})` : "";
    $("answered-by").textContent = `Answered by model ${body.model}, version ${body.version}${labelText}`;
    const items = $("bars").children;
    prediction.probabilities.forEach((probability, index) => {
      const item = items[index];
      item.querySelector(".bar").style.height = `${probability * 100}%`;
      item.classList.toggle("predicted", index === digit);
      item.classList.remove("truth");
      item.title = `${index}: ${percent(probability)}`;
      item.querySelector(".bar-value").textContent = `: ${percent(probability)}`;
    });
    drawSeen(prediction.input);
    if (state.sentUrl) URL.revokeObjectURL(state.sentUrl);
    state.sentUrl = URL.createObjectURL(blob);
    $("sent").src = state.sentUrl;
    $("correct").textContent = `Correct, it is ${aDigit(digit)}`;
    $("feedback-status").textContent = "";
    $("feedback-status").className = "feedback-status";
    const result = $("result");
    result.dataset.source = origin.source;
    result.dataset.strokes = String(origin.strokes);
    result.dataset.predictionId = prediction.prediction_id;
    result.hidden = false;
  }

  // The model's input is light ink on black, values 0-1: drawn as such, a pixel a pixel.
  function drawSeen(image) {
    const seen = $("seen").getContext("2d");
    const pixels = seen.createImageData(28, 28);
    image.forEach((row, y) =>
      row.forEach((value, x) => {
        const level = Math.round(Math.min(Math.max(value, 0), 1) * 255);
        pixels.data.set([level, level, level, 255], (y * 28 + x) * 4);
      }),
    );
    seen.putImageData(pixels, 0, 0);
  }

  // --- Feedback -------------------------------------------------------------------------
  async function sendFeedback(label) {
    const prediction = state.prediction;
    if (!prediction) return;
    const status = $("feedback-status");
    status.className = "feedback-status";
    status.textContent = "Sending…";
    try {
      const body = await api("/v1/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prediction_id: prediction.id, label }),
      });
      const outcome = body.results[0].outcome;
      status.textContent =
        outcome === "correct"
          ? "Counted: the model was right. Thank you."
          : `Counted: it was ${aDigit(label)}, the model said ${prediction.digit}. Thank you.`;
      status.classList.add("counted");
      for (const item of $("bars").children) item.classList.remove("truth");
      $("bars").children[label].classList.add("truth");
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("refused");
    }
  }

  $("correct").addEventListener("click", () => {
    if (state.prediction) sendFeedback(state.prediction.digit);
  });
  for (const button of document.querySelectorAll("#feedback [data-label]")) {
    button.addEventListener("click", () => sendFeedback(Number(button.dataset.label)));
  }

  // --- Status strip ---------------------------------------------------------------------
  function describeModel(model) {
    const labels = {};
    for (const [label, version] of Object.entries(model.labels || {})) {
      (labels[version] = labels[version] || []).push(label);
    }
    state.labelsByVersion[model.name] = labels;
    if (!model.versions.length) return `${model.name}: no versions`;
    const versions = model.versions.map((row) => {
      const named = labels[row.version] ? ` (${labels[row.version].join(", ")})` : "";
      return `v${row.version}${named} ${row.state.toLowerCase()}`;
    });
    return `${model.name}: ${versions.join(" · ")}`;
  }

  async function loadModels() {
    const line = $("models-status");
    try {
      const body = await api("/v1/models");
      line.textContent = `Versions: ${body.models.map(describeModel).join("; ")}`;
      const select = $("model");
      if (body.models.length > 1 && select.options.length !== body.models.length) {
        select.replaceChildren(
          ...body.models.map((model) => new Option(model.name, model.name)),
        );
        select.value = state.model;
        $("model-choice").hidden = false;
      }
    } catch (error) {
      line.textContent = `Versions unavailable: ${error.message}`;
    }
  }

  async function loadAccuracy() {
    const line = $("accuracy-status");
    try {
      const body = await api(modelPath("/accuracy"));
      if (body.status !== "ok" || !body.versions.length) {
        line.textContent = `Online accuracy: ${body.message}`;
        return;
      }
      const minutes = Math.round(body.window_seconds / 60);
      const figures = body.versions.map((row) => {
        if (row.accuracy === null) return `v${row.version} no feedback`;
        const labels = Math.round(row.feedback_per_second * body.window_seconds);
        return `v${row.version} ${percent(row.accuracy)} (about ${labels} labels)`;
      });
      line.textContent = `Online accuracy, last ${minutes} minutes: ${figures.join(" · ")}`;
    } catch (error) {
      line.textContent = `Online accuracy unavailable: ${error.message}`;
    }
  }

  function refreshStatus() {
    if (state.keysRequired && !sessionStorage.getItem(KEY_STORAGE)) {
      $("models-status").textContent = "Type the API key above to see the model versions.";
      return;
    }
    loadModels();
    loadAccuracy();
  }

  $("model").addEventListener("change", (event) => {
    state.model = event.target.value;
    loadAccuracy();
  });

  clearPad();
  if (state.keysRequired && !sessionStorage.getItem(KEY_STORAGE)) askForKey(null);
  refreshStatus();
  setInterval(refreshStatus, STATUS_REFRESH_MS);
})();
