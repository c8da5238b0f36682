"""Deploy stage, host side: pack a run's verified model with what the Raspberry Pi runs into one tarball.

    python -m deploy --run runs/NAME [--format tflite_int8] [--out dist]    # -> dist/NAME-edge.tar.gz (deploy.bundle)

The bundle ships contracts/, edge/ and benchmarks/device/ whole (never a hand-kept list of files), the model with
a manifest that lists only it, the pinned edge requirements, and install.sh, a systemd unit and a README filled in
from deploy/templates/. Nothing here runs on the Pi; it is the last stage and no other imports it.
"""
