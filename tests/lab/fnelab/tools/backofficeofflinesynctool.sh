#!/bin/sh
# Stand-in for the vendor's backofficeofflinesynctool.sh (fnelab). Works from any cwd, by absolute path.
exec "$(dirname "$(readlink -f "$0")")/_python.sh" backoffice "$@"
