# ganray's image: the official Ray image of the pinned Ray (pyproject.toml) and
# Python 3.11, GPU variant (CUDA), with ganray and its pinned stack installed.
# The KubeRay manifests (k8s/) and the cluster launcher (cluster/aws-gpu.yaml)
# run it; tests/test_deploy_versions.py keeps this tag, pyproject.toml and
# every manifest's rayVersion and image tag in agreement.
#
#   docker build -t ghcr.io/your-org/ganray:0.1.0-ray2.60.0-py311-gpu .
#   docker push ghcr.io/your-org/ganray:0.1.0-ray2.60.0-py311-gpu
FROM rayproject/ray:2.60.0-py311-gpu

# The repository lives here: the RayJob's --space path and the launcher's
# file mount point into it (k8s/ganray_rules.py: IMAGE_REPO_DIR). Made by the
# image's user `ray` first: WORKDIR alone would create it owned by root, and
# the editable install writes its metadata into it.
RUN mkdir -p /home/ray/ganray
WORKDIR /home/ray/ganray

# Dependencies first (a layer that changes only with pyproject.toml): an
# editable install of an empty package resolves the pinned stack (torch,
# ray[tune,train,default], optuna, s3fs, pytorch-fid...) against the image's Ray.
COPY --chown=ray:users pyproject.toml README.md ./
RUN mkdir ganray && touch ganray/__init__.py \
    && pip install --no-cache-dir -e . \
    && rm -rf ganray

# FID InceptionV3 weights (pytorch-fid's, 92 MB) into the torch hub cache at build
# time: with them, metrics.backbone=auto scores searches with the Inception FID
# published results use, and no Pod downloads anything at run time.
RUN python -c "from pytorch_fid.inception import fid_inception_v3; fid_inception_v3()"

# Then the code, the search spaces and the runtime env; the editable install
# above already points at this folder.
COPY --chown=ray:users ganray ganray
COPY --chown=ray:users tune_spaces tune_spaces
COPY --chown=ray:users cluster cluster

# Fail the build, not the first job, if the stack does not import or Ray drifted.
RUN python -c "import ganray.tune.driver, ray; assert ray.__version__ == '2.60.0', ray.__version__"

ENV PYTHONUNBUFFERED=1
