"""Train MNIST models and publish them as TF Serving versions (`python -m trainer`)."""
