# Sourced by the MPI job tests: starts $REWARD_SERVER on a free loopback port in the current directory,
# sets $port, and stops the server when the test exits.
start_reward() {
    "$REWARD_SERVER" --listen 127.0.0.1:0 --port-file reward.port >reward.log 2>&1 &
    reward_pid=$!
    trap 'kill $reward_pid 2>/dev/null || true' EXIT
    i=0
    while [ ! -s reward.port ]; do
        i=$((i + 1))
        [ $i -le 100 ] || { echo "FAIL: reward-server did not start"; cat reward.log; exit 1; }
        sleep 0.1
    done
    port=$(cat reward.port)
}
