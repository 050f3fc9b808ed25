"""Implementation of the screen simulator; the public entry point is :mod:`helpers.data.simulate`."""
