# Container images and the versions they install: constraints/constraints.txt pins every
# extra of pyproject.toml, for `make install` and the image builds alike.

CONSTRAINTS := constraints/constraints.txt

.PHONY: constraints

# Not `install`: that needs this file, and this target must work when it is missing.
constraints: | $(PY) ## Re-pin constraints/constraints.txt from pyproject.toml (UV_COMPILE_ARGS=--upgrade to move)
	$(PY) -m pip install --quiet uv
	$(UV) pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--custom-compile-command "make constraints" --quiet $(UV_COMPILE_ARGS) -o $(CONSTRAINTS)
