"""HTTP routers: they translate HTTP to the domain functions and back."""
