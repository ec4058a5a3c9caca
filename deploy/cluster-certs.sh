#!/bin/sh
# Makes the certificates for TLS between cluster nodes ([cluster.tls]): a CA of the cluster's
# own and one node certificate it signs, carrying the name every node dials its peers under.
#
#   deploy/cluster-certs.sh OUT_DIR [SERVER_NAME] [DAYS]
#
# OUT_DIR gets ca.pem, ca-key.pem (keep it off the nodes), node.pem and node-key.pem.
# SERVER_NAME defaults to switchyard-cluster (the default of cluster.tls.server_name); DAYS
# to 825. Every node may share the one node certificate, or run the script's last step once
# per node with the same CA. Needs the openssl command.
set -eu

out=${1:?usage: cluster-certs.sh OUT_DIR [SERVER_NAME] [DAYS]}
name=${2:-switchyard-cluster}
days=${3:-825}
mkdir -p "$out"
cd "$out"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/CN=$name CA" -keyout ca-key.pem -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$name" -keyout node-key.pem -out node.csr 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$name" > node.ext
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
    -extfile node.ext -out node.pem 2>/dev/null
rm -f node.csr node.ext ca.srl
chmod 600 ca-key.pem node-key.pem
echo "wrote $out/ca.pem, $out/node.pem, $out/node-key.pem (server name $name, $days days)"
