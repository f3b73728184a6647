#!/usr/bin/env bash
# Fetch the GLUE data into src/data/data_raw/glue_data/ (arguments go to download_glue_data.py);
# with --with_bert or PEAKD_WITH_BERT=1 also the pretrained BERT into src/data/models/pretrained/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python=python3
if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; fi

with_bert="${PEAKD_WITH_BERT:-0}"
glue_args=()
for arg in "$@"; do
    if [[ "$arg" == "--with_bert" ]]; then with_bert=1; else glue_args+=("$arg"); fi
done

# ${a[@]+...} keeps an empty argument list from tripping `set -u` on older bash.
"$python" "$root/src/data/data_raw/download_glue_data.py" ${glue_args[@]+"${glue_args[@]}"}
if [[ "$with_bert" == 1 ]]; then
    "$python" "$root/src/data/data_raw/download_pretrained_bert.py"
fi
