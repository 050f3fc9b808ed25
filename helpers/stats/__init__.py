"""Statistical building blocks (local false discovery rates, bootstrap intervals), one module each."""
