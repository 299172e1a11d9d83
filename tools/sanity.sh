#!/usr/bin/env bash
# ansible-test sanity over a copy of the tree: tools/sanity.sh DEST [paths or ansible-test args...]
exec bash "$(dirname "$0")/ansible_test.sh" sanity "$@"
