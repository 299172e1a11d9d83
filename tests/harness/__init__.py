"""Test harness of ransomeye.ops: throwaway PostgreSQL, Ansible runners, demo host."""
