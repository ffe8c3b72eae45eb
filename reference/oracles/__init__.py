"""Layer 2, the references: float64 NumPy formulas (``numpy_ref``), PyTorch references (``torch_ref``,
``torch_adapters``, ``torch_names``), masks and the blog's known divergences. Import only ``reference.spec``."""
