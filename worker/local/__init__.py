"""Local stand-ins for `modstream demo` and the tests: embedded broker, llama.cpp server, the demo itself."""
