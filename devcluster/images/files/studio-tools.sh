#!/bin/sh
# A tool of the `tools` env (no Python): its config path is a conda prefix placeholder.
. "/opt/anaconda1anaconda2anaconda3_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold/etc/studio-tools.conf"
echo "studio-tools $VERSION at $PREFIX"
