#!/bin/sh
# Run the stand-in tools' Java program (fnelab/java/FneTool.java, compiled into .classes here by `fnelab up` or
# `fnelab build-tools`) with $JAVA_HOME's JVM, else the one on PATH. $FNELAB_JVM_OPTS: set by a lab's own wrappers.
here=$(dirname "$(readlink -f "$0")")
if [ ! -f "$here/.classes/FneTool.class" ]; then
    echo "ERROR: the stand-in vendor tools are not compiled: run fnelab build-tools" >&2
    exit 1
fi
# shellcheck disable=SC2086  # FNELAB_JVM_OPTS holds several options
exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto $FNELAB_JVM_OPTS \
    -cp "$here/.classes" FneTool "$@"
