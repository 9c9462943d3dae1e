"""The GPU plan, worked out on the CPU: real-size dry run, memory plan and the session budget."""
