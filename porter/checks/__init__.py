"""Checks on input nobody vetted: files inside the model's folder, declared sizes, Keras archives, numbers, names."""
