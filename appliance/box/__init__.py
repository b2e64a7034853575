"""The invisible box: its settings document and the pure plan made from it.

`settings` is the one validated document a person edits (and backs up);
`plan` turns it, with what was observed of the hardware, into plain data
that an apply layer walks through the kernel boundary.
"""
