"""The home's devices as the box follows them by itself: new devices, traffic over time,
data budgets, and the schedules that switch devices off (`service`, deciding in the pure
`policy` and `tracker`)."""
