#!/usr/bin/env bash
# Print the installed linux-headers directory closest to kernel release $1
# (same major.minor first, then the highest version below, then any).
set -euo pipefail
want=${1:-$(uname -r)}
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
mapfile -t dirs < <(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V)
((${#dirs[@]})) || exit 1
ver() { echo "$1" | sed -E 's/.*linux-headers-([0-9]+\.[0-9]+).*/\1/'; }
wmm=$(echo "$want" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
best=""
for d in "${dirs[@]}"; do
  [[ $(ver "$d") == "$wmm" ]] && best=$d
done
if [[ -z $best ]]; then
  for d in "${dirs[@]}"; do
    if [[ $(printf '%s\n%s\n' "$(ver "$d")" "$wmm" | sort -V | head -1) == "$(ver "$d")" ]]; then best=$d; fi
  done
fi
[[ -n $best ]] || best=${dirs[-1]}
echo "$best"
