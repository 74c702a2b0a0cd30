"""The technician's tool behind tools/flash.py: targets (SSH, directory), bundle building, the commands."""
