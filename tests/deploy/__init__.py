"""Helpers of tests/test_deploy.py: a Debian root, a network namespace, playbook runs."""
