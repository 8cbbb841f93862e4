#!/bin/sh
# Stand-in for the vendor's backofficeofflinesynctool.sh (fnelab, a Java program). Works from any cwd, by absolute path.
exec "$(dirname "$(readlink -f "$0")")/_java.sh" backoffice "$@"
