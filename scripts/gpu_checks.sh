#!/usr/bin/env bash
# The GPU speed checks of docs/benchmarks.md, in priority order, each under its own time limit, so one
# lease of a GPU machine (minutes) measures as much as it can. Not a test; nothing here asserts a speed.
#
#   OFFICIAL=/path/to/official OUT=/path/to/results bash scripts/gpu_checks.sh
#   STEPS="loop seeds" OUT=... bash scripts/gpu_checks.sh      # some steps only (default: all four, in order)
#
# OFFICIAL holds the official code, kept outside the repository (never committed): drqv2_official/
# (facebookresearch/drqv2: drqv2.py, utils.py), drm_official/ (XuGW-Kevin/DrM: agents/drm.py, utils.py) and
# prdc_official/ (LAMDA-RL/PRDC). The interpreter needs jax with a GPU and a CUDA build of torch; MuJoCo and
# dm_control render through EGL (MUJOCO_GL=egl). Everything goes to $OUT: gpu_checks.log (all output),
# drm_gpu.json, prdc_gpu.json and loop_metrics.csv (the DrM loop's per-episode rows, with frames/s).
#
# 1. DrM and DrQ-v2 updates/s against the official PyTorch code, both on the GPU (scripts/benchmark_drm.py),
#    pixax in float32 (the official dtype) and bfloat16.
# 2. DrM's whole training loop on cheetah_run from pixels, one seed (environment subprocess, overlapped with
#    the updates), long enough to read its steady frames/s: the 1M-frames-in-30-minutes target. Evaluation
#    off and no videos (the machine may lack imageio-ffmpeg). With PYSPY set to a py-spy binary, the main
#    process is profiled for PROFILE_SECONDS (default 50) from LOOP_PROFILE_AT s (default 70): $OUT/loop_profile.txt.
# 3. DrM updates/s over 8 seeds in one program (scripts/benchmark_drqv2.py --agent drm): the
#    1,000 seed-updates/s target.
# 4. PRDC updates/s against the official PRDC (torch on the GPU, scipy KD-tree on the host).
# Not in the default STEPS, not yet run on a GPU (their official code must be under OFFICIAL too):
# tdmpc     TD-MPC env steps/s with planning and updates, both on the GPU (scripts/benchmark_tdmpc.py;
#           OFFICIAL/tdmpc_official holds src/ and cfgs/ of nicklashansen/tdmpc).
# onpolicy  PPO / PROPS env steps/s (scripts/benchmark_onpolicy.py; OFFICIAL/ppoors_official holds PPOROS's
#           PROPS/ folder without its 229 MB plotting/ data). The official side runs with --cuda False.
set -u
: "${OUT:?set OUT to the results folder}"
PY=${PY:-python3}
STEPS=${STEPS:-drm loop seeds prdc}
log=$OUT/gpu_checks.log
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
if wanted drm || wanted prdc || wanted tdmpc || wanted onpolicy; then : "${OFFICIAL:?set OFFICIAL to the folder of the official code}"; fi
step() {  # step <seconds> <title> <command...>: runs one check under `timeout`, output appended to the log
    local seconds=$1 title=$2; shift 2
    echo -e "\n===== $title (limit ${seconds} s) $(date +%T)" | tee -a "$log"
    local start=$SECONDS
    timeout -k 10 "$seconds" "$@" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' >> "$log"
    echo "===== $title: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$log"
}

{ nvidia-smi -L; $PY -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__)"
  nproc; } >> "$log" 2>&1

wanted drm && step "${DRM_SECONDS:-200}" "1. DrM / DrQ-v2 update vs official" \
    $PY scripts/benchmark_drm.py --device cuda --agents drm,drqv2 --drqv2-dir "$OFFICIAL/drqv2_official" \
    --drm-dir "$OFFICIAL/drm_official" --python "$PY" --torch-threads 1 --compute-dtypes float32,bfloat16 \
    --rounds 3 --iters 50 --act-iters 50 --env-steps 200 --json "$OUT/drm_gpu.json"

if wanted loop; then
    runs=$(mktemp -d)
    if [ -n "${PYSPY:-}" ]; then  # profile the loop's main process once it is past compiling and seeding
        ( sleep "${LOOP_PROFILE_AT:-70}"; "$PYSPY" record --pid "$(pgrep -n -f experiments/drm.py)" --idle \
          --rate 100 --duration "${PROFILE_SECONDS:-50}" --format raw -o "$OUT/loop_profile.txt" ) >/dev/null 2>&1 &
    fi
    step "${LOOP_SECONDS:-150}" "2. DrM training loop, cheetah_run, 1 seed" \
        $PY experiments/drm.py --config.task=cheetah_run --config.root="$runs" --config.save_video=False \
        --config.checkpoint_every_frames=100000000 --config.agent.num_eval_episodes=0 \
        --config.agent.num_train_frames="${LOOP_FRAMES:-60000}"
    wait
    cp "$runs"/drm/cheetah_run/*/metrics.csv "$OUT/loop_metrics.csv" 2>/dev/null
fi

wanted seeds && step "${SEEDS_SECONDS:-120}" "3. DrM update over 8 seeds" \
    $PY scripts/benchmark_drqv2.py --agent drm --seeds 1,8 --strategies "${SEED_STRATEGIES:-map,unroll}" --dtypes bfloat16 \
    --iters 20 --env-procs ""

wanted prdc && step "${PRDC_SECONDS:-100}" "4. PRDC update vs official" \
    $PY scripts/benchmark_prdc.py --official-dir "$OFFICIAL/prdc_official" --python "$PY" \
    --official-device cuda --torch-threads 1 --size 100000 --backends brute_force,kdtree --updates 1000 \
    --brute-force-updates 4000 --max-seconds 25 --json "$OUT/prdc_gpu.json"
wanted tdmpc && step "${TDMPC_SECONDS:-200}" "5. TD-MPC env steps/s vs official" \
    $PY scripts/benchmark_tdmpc.py --official-dir "$OFFICIAL/tdmpc_official" --python "$PY" --device cuda \
    --task cartpole_swingup --episodes 1 --json "$OUT/tdmpc_gpu.json"

wanted onpolicy && step "${ONPOLICY_SECONDS:-200}" "6. PPO / PROPS env steps/s vs official" \
    $PY scripts/benchmark_onpolicy.py --official-dir "$OFFICIAL/ppoors_official" --python "$PY" --task Hopper-v5 \
    --torch-threads 1 --max-seconds 60 --json "$OUT/onpolicy_gpu.json"
echo "===== done $(date +%T)" | tee -a "$log"
