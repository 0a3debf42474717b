// ostrakon serve: the OpenAI-compatible HTTP server with the web UI.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "server/api_server.h"
#include "server/model_setup.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

namespace {

const char* kServeUsage =
    "usage: ostrakon serve [--model DIR] [--device cpu|cuda] [--host H] [--port P] [--api-key KEY]...\n"
    "                      [--max-concurrency N] [--max-queue N] [--max-images N] [--max-pixels N]\n"
    "                      [--kv-memory MB] [--allow-file-dir DIR] [--tokenizer FILE] [--demo-dir DIR]\n"
    "                      [--max-body-mb N] [--default-max-tokens N] [--served-model-name NAME]\n"
    "                      [--kv-cache-dtype bf16|fp8]  (fp8: e4m3 K/V, nearly twice the tokens per MB)\n"
    "                      [--json-max-string N]  (response_format: at most N characters per JSON string)\n"
    "Without --model it serves the built-in demo model (random weights: its answers are noise).\n"
    "Routes: / (web UI), POST /v1/chat/completions, GET /v1/models, /health, /metrics.\n";

int serve_fail(const std::string& msg, int code) {
  std::fprintf(stderr, "serve: %s\n", msg.c_str());
  return code;
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  auto args = Args::parse(argc, argv,
                          {"model", "device", "host", "port", "api-key", "max-concurrency", "max-queue",
                           "max-images", "max-pixels", "kv-memory", "allow-file-dir", "tokenizer", "demo-dir",
                           "max-body-mb", "default-max-tokens", "served-model-name", "kv-cache-dtype",
                           "json-max-string"},
                          {"help"});
  if (!args) {
    std::fprintf(stderr, "%s", kServeUsage);
    return serve_fail(args.message(), 2);
  }
  if (args->has("help")) {
    std::printf("%s", kServeUsage);
    return 0;
  }
  auto port = args->get_int("port", 8080, 0, 65535);
  auto conc = args->get_int("max-concurrency", 16, 1, 4096);
  auto queue = args->get_int("max-queue", 256, 1, 1 << 20);
  auto images = args->get_int("max-images", 8, 0, 256);
  auto pixels = args->get_int("max-pixels", 50'000'000, 1, INT64_MAX);
  auto kv = args->get_int("kv-memory", 1024, 1, 1 << 24);
  auto body = args->get_int("max-body-mb", 64, 1, 4096);
  auto def_tokens = args->get_int("default-max-tokens", 1024, 1, 1 << 24);
  auto json_string = args->get_int("json-max-string", 0, 0, 1 << 30);
  for (const Status& s : {port.status(), conc.status(), queue.status(), images.status(), pixels.status(),
                          kv.status(), body.status(), def_tokens.status(), json_string.status()})
    if (!s) return serve_fail(s.message(), 2);
  const std::string device = args->get("device", "cpu");
  if (device != "cpu" && device != "cuda") return serve_fail("--device must be cpu or cuda", 2);

  server::ApiServerOptions so;
  so.api_keys = args->all("api-key");
  so.limits.max_images = int(*images);
  so.limits.max_image_pixels = *pixels;
  so.limits.default_max_tokens = int(*def_tokens);
  so.limits.json_max_string = uint32_t(*json_string);
  so.http.limits.max_body_bytes = size_t(*body) << 20;
  so.limits.max_image_bytes = std::min<int64_t>(so.limits.max_image_bytes, *body << 20);
  if (args->has("allow-file-dir")) {
    std::error_code ec;
    auto d = std::filesystem::canonical(args->get("allow-file-dir"), ec);
    if (ec || !std::filesystem::is_directory(d)) return serve_fail("--allow-file-dir is not a folder", 2);
    so.limits.allow_file_dir = d.string();
  }
  so.demo_model = !args->has("model");

  EngineLoopOptions eo;
  eo.max_running = int(*conc);
  eo.max_queue = int(*queue);
  eo.kv_memory_mb = *kv;
  auto kvd = quant::parse_kv_dtype(args->get("kv-cache-dtype", "bf16"));
  if (!kvd) return serve_fail(kvd.message(), 2);
  eo.kv_cache_dtype = *kvd;
  eo.step_tokens = std::max<int64_t>(2048, *conc);

  // SIGINT/SIGTERM are taken by sigwait below; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  server::ApiServer srv(so);
  const std::string host = args->get("host", "127.0.0.1");
  if (Status st = srv.listen(host, int(*port)); !st) return serve_fail(st.message(), 1);
  srv.start();
  std::fprintf(stderr, "serve: listening on http://%s:%d/\n", host.c_str(), srv.port());
  std::fflush(stderr);

  std::thread loader([&] {
    std::string dir = args->get("model");
    std::string name = args->get("served-model-name");
    if (so.demo_model) {
      std::string tok = args->get("tokenizer", server::find_bundled_tokenizer());
      std::string demo_dir = args->get("demo-dir", server::default_demo_dir());
      std::fprintf(stderr, "serve: no --model given: serving the built-in demo model (random weights) from %s\n",
                   demo_dir.c_str());
      auto d = server::ensure_demo_model(demo_dir, tok);
      if (!d) {
        std::fprintf(stderr, "serve: %s\n", d.message().c_str());
        srv.set_load_error(d.message());
        return;
      }
      dir = *d;
      if (name.empty()) name = server::kDemoModelName;
    }
    if (name.empty()) name = std::filesystem::path(dir).lexically_normal().filename().string();
    if (name.empty()) name = std::filesystem::path(dir).lexically_normal().parent_path().filename().string();
    auto e = server::load_engine_loop(dir, device, name, eo);
    if (!e) {
      std::fprintf(stderr, "serve: cannot load %s: %s\n", dir.c_str(), e.message().c_str());
      srv.set_load_error(e.message());
      return;
    }
    std::fprintf(stderr, "serve: model \"%s\" ready on %s\n", name.c_str(), device.c_str());
    std::fflush(stderr);
    srv.set_engine(std::move(*e));
  });

  int sig = 0;
  sigwait(&sigs, &sig);
  std::fprintf(stderr, "serve: signal %d, shutting down\n", sig);
  if (loader.joinable()) loader.join();
  srv.stop();
  return 0;
}

}  // namespace ost::tools
