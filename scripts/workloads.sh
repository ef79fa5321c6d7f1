# Sourced by the training and benchmark scripts: which photos make which workload.
# Sources are the folders photos sit in (data/photos/<source>/, data/uploads/<source>/).
#
# CROSS_SOURCES are never trained on: the shipped agent is trained on the train split
# of every other source (sample photos and uploads), and the cross-source test runs on
# every photo of these.
CROSS_SOURCES=lomiri,kphotoalbum
export CROSS_SOURCES
