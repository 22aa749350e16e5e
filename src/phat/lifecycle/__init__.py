"""Lifecycle after training: promotion gates (pure decisions) and the registry moves that act on them; monitoring later."""
