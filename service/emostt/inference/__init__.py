"""Model inference. Only this package imports torch and funasr."""
