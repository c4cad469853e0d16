// The VS Code client: starts `resdsl lsp` (or the command set in
// `resdsl.server.command`) and connects it to every .res file.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("resdsl")
    .get("server.command", ["resdsl", "lsp"]);
  const serverOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "resdsl" }, { scheme: "untitled", language: "resdsl" }],
  };
  client = new LanguageClient("resdsl", "resdsl language server", serverOptions, clientOptions);
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
