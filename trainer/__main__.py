"""Entry point: `python -m trainer`."""

from trainer.cli import app

if __name__ == "__main__":
    app()
