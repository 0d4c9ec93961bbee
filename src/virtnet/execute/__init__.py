"""The one executor: steps applied in order and undone newest first (executor), their
journal (journal), the recovery of what a killed process left (recover), the live-apply
step kinds (steps) and the crash and fault injection of the tests (faults)."""
