"""The virtual bench: one optical model of the link and emulators that read and change it."""
