#!/bin/sh
# Stand-in for the vendor's serverofflinesynctool.sh (fnelab, a Java program). Works from any cwd, by absolute path.
exec "$(dirname "$(readlink -f "$0")")/_java.sh" server "$@"
