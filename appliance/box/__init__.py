"""The invisible box: its settings document, the pure plan made from it, and the box that applies it.

`settings` is the one validated document a person edits (and backs up);
`plan` turns it, with what was observed of the hardware, into plain data
(kernel objects, the switch with `flows`' Flow objects, service configs)
laid out by `layout`. `runtime.Box` applies plans through its ports
(`protocols`; the machine's, or the fakes in `fake`) and keeps what it
applied (`stored`). `locate` finds the box a process manages from the
environment; `status` reads the running box.
"""
