"""sam4dcap biomech."""
