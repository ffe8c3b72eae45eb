"""Second implementations of the contract, made at test time, that prove ``--impl`` reaches only the contract."""
