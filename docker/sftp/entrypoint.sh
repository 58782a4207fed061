#!/bin/sh
# Install the mounted host key and the backend user's public key, then run sshd in the foreground.
# Fails at once, naming the file, when one is missing (run docker/init_env.py first).
set -eu
host_key=/run/secrets/ssh_host_ed25519_key
client_pub=/run/secrets/backend_sftp_key.pub
for f in "$host_key" "$client_pub"; do
  if [ ! -s "$f" ]; then
    echo "sftp: missing $f (mounted from docker/secrets/; run: python3 docker/init_env.py)" >&2
    exit 2
  fi
done
# sshd refuses a private key that others can read: keep a root-only copy
install -m 0600 -o root -g root "$host_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 -o root -g root "$client_pub" /etc/ssh/authorized_keys/backend
mkdir -p /srv/sftp/data/inbound /srv/sftp/data/outbound /srv/sftp/data/stock
chown backend:backend /srv/sftp/data /srv/sftp/data/inbound /srv/sftp/data/outbound /srv/sftp/data/stock
/usr/sbin/sshd -t
exec /usr/sbin/sshd -D -e
