# CI's S3 server for the compose drill (docker/compose.ci.yaml): a
# throw-away Ceph cluster (mon, one bluestore OSD, radosgw) from Debian's
# packages, started by the tests' own tests/support/ceph-rgw.sh inside the
# container. The build context is a directory the CI script assembles:
# ceph-rgw.sh and run-rgw.sh.
ARG BASE_IMAGE=pitr-base:local
FROM ${BASE_IMAGE}
COPY ceph-rgw.sh run-rgw.sh /usr/share/pitr/rgw/
# bluestore opens its block file with O_DIRECT: keep it on a volume, not on
# the overlay file system.
VOLUME /var/lib/rgw
ENTRYPOINT ["bash", "/usr/share/pitr/rgw/run-rgw.sh"]
