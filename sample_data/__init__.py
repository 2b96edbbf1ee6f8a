"""A generated stand-in for the momee dataset (drawn photos), shared by training, the demo and the
tests."""
