"""The wire contracts of busway: every command, reply, event and error on the bus.

This package is the only one the services share. It depends on pydantic alone.
"""
