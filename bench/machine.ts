import { readFileSync } from "node:fs";
import os from "node:os";

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
  /** Load average over the last minute when the run started: how busy the machine was. */
  load1: number;
}

export function machineInfo(): Machine {
  let distro = "";
  try {
    distro = /^PRETTY_NAME="?([^"\n]*)/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "";
  } catch {
    /* not Linux, or no os-release */
  }
  return {
    cpu: os.cpus()[0]?.model.trim() ?? "unknown",
    cores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    os: `${distro || os.type()} (${os.platform()} ${os.release()}, ${os.arch()})`,
    load1: Math.round(os.loadavg()[0] * 100) / 100,
  };
}

/** One line that every figure carries. */
export const machineLine = (m: Machine) => `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}`;
