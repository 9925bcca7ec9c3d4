"""Test doubles of the remote side: the Lance simulator and CRM sandboxes."""
