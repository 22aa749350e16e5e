"""Lifecycle after training: promotion gates (pure decisions), the production alias and its append-only history (exclusive, all-or-nothing moves), and the doctor that repairs crash debris."""
