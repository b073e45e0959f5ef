#!/usr/bin/env bash
# launch/reward-wait.sh HOST:PORT [SECONDS]: waits until the reward service at HOST:PORT answers a scoring
# request (a listening socket is not enough: a server that failed after binding, or another program on
# the port, does not answer), for at most SECONDS (default 60). Exit 0 once it answers, 1 after the
# wait with a message naming the address. The launchers run it after starting the service (under SLURM
# once per node, as a job step).
set -uo pipefail
addr=${1:?usage: reward-wait.sh HOST:PORT [SECONDS]}
limit=${2:-60}
host=${addr%:*}
port=${addr##*:}
request='{"id":"reward-wait","completion":"<answer>a</answer>","solution":"<answer>a</answer>"}'
start=$SECONDS
while [ $((SECONDS - start)) -lt "$limit" ]; do
  if { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    printf '%s\n' "$request" >&3
    if IFS= read -r -t 5 line <&3 && [[ $line == *'"id":"reward-wait"'*'"total":2'* ]]; then
      exec 3<&-
      exit 0
    fi
    exec 3<&-
  fi
  sleep 0.2
done
echo "reward-wait.sh: the reward service at $addr did not answer within $limit s ($(hostname))" >&2
exit 1
