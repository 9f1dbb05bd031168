"""Model files and the runtimes that execute them: one module per model."""
