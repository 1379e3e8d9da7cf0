"""Pure loss functions: tensors in, unreduced tensors out, no model calls."""
