#!/bin/sh
# Run fnelab.vendor_tools with the Python that has fnelab installed: $FNELAB_PYTHON, else the virtualenv this
# file lives in (site-packages install) or next to (editable install in a checkout), else python3.
here=$(dirname "$(readlink -f "$0")")
py=${FNELAB_PYTHON:-}
if [ -z "$py" ]; then
    d=$here
    while [ "$d" != "/" ]; do
        if [ -f "$d/pyvenv.cfg" ] && [ -x "$d/bin/python" ]; then py=$d/bin/python; break; fi
        if [ -x "$d/.venv/bin/python" ]; then py=$d/.venv/bin/python; break; fi
        d=$(dirname "$d")
    done
fi
exec "${py:-python3}" -m fnelab.vendor_tools "$@"
