"""Stage 1 of train -> export -> bench: recipes and the resumable training loop (needs TensorFlow)."""
