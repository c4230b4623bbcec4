"""Stage 3 of train -> export -> bench: accuracy against latency, size and memory, locally and on devices."""
