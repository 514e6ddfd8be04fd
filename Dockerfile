# Ferry's container image: the server (`ferry server`) and, in pod mode, its replicas
# (`ferry replica`) run from the same image. docs/kubernetes.md says how to build and run it.
#
#   docker build -t ferry:dev .
#   docker build -t ferry:python --build-arg PYTHON_PACKAGES="python3 python3-numpy python3-pandas \
#     python3-sklearn python3-xgboost python3-cloudpickle" .                      # MLflow pyfunc models
#   docker build -t ferry:cuda --build-arg ONNXRUNTIME_NODE_INSTALL=cuda12 \
#     --build-arg RUNTIME_BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 .   # GPU nodes
#
# Two stages: the build stage has the compiler toolchain and the dev dependencies (TypeScript,
# vite); the runtime stage gets only the compiled output and the production dependencies.

# The runtime stage's base: the default runs on CPUs. GPU nodes need CUDA 12 and cuDNN 9 user
# libraries, which this image lacks (the NVIDIA container runtime brings only the driver): build
# the runtime stage on NVIDIA's image instead, with the node binary copied in below, e.g.
#   --build-arg ONNXRUNTIME_NODE_INSTALL=cuda12 --build-arg RUNTIME_BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ARG RUNTIME_BASE=node:20-bookworm-slim
# Debian packages for python-flavor models (MLflow pyfunc), baked into the image: a pod's root file
# system is read-only and its start must not depend on a package index. Empty: no Python, and
# python models fail to start naming the interpreter. Add mlflow (pip, into /usr/local) the same way
# for models that need `mlflow.pyfunc.load_model` (custom PythonModels).
ARG PYTHON_PACKAGES=

FROM node:20-bookworm-slim AS build
# better-sqlite3 compiles from source when no prebuilt binary matches; it needs these.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 g++ make ca-certificates \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# onnxruntime-node's install script reads this before .npmrc's onnxruntime-node-install=skip:
# "skip" keeps the CPU build bundled in the package, "cuda12" downloads the CUDA provider.
ARG ONNXRUNTIME_NODE_INSTALL=skip
ENV ONNXRUNTIME_NODE_INSTALL=${ONNXRUNTIME_NODE_INSTALL}
COPY package.json package-lock.json .npmrc tsconfig.json ./
COPY src ./src
COPY test ./test
COPY scripts ./scripts
COPY bench ./bench
COPY ui ./ui
COPY bin ./bin
COPY proto ./proto
# npm ci runs the package's `prepare` script, which is `npm run build` (tsc and the console's vite
# build); the checks make a skipped build fail here rather than in a pod.
RUN npm ci --no-audit --no-fund \
  && test -f dist/src/cli/main.js && test -f ui/dist/index.html \
  && npm prune --omit=dev --no-audit --no-fund

FROM ${RUNTIME_BASE} AS runtime
ARG PYTHON_PACKAGES
ENV NODE_ENV=production
WORKDIR /app
# bubblewrap: the OS sandbox around every replica process (docs/security.md). It needs user
# namespaces in the container (or set "sandbox": "none" and accept that js models are refused).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap ${PYTHON_PACKAGES} \
  && rm -rf /var/lib/apt/lists/*
# Node itself, from the build stage (the same binary whatever the base; a no-op on the node image).
COPY --from=build /usr/local/bin/node /usr/local/bin/node
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
# The Python worker of python-flavor replicas (standard library + numpy/pandas).
COPY python ./python
COPY --from=build /app/dist/src ./dist/src
# The OIP v2 gRPC service definition, loaded by the gRPC front end at start.
COPY --from=build /app/proto ./proto
COPY --from=build /app/ui/dist ./ui/dist
# The data directory (admin token file, artifact cache, SQLite when no databaseUrl); in
# Kubernetes a volume is mounted over it, as the root filesystem is read-only there.
RUN mkdir -p -m 0700 /var/lib/ferry && chown 1000:1000 /var/lib/ferry
# The node image's unprivileged user, by number so that runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["node", "/app/bin/ferry.js"]
CMD ["server", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/var/lib/ferry"]
