// procmem.h: this process's host memory as the kernel counts it (/proc/self/status), so a run can report
// its peak against the memory plan's host side (memplan.h).
#pragma once

// The peak resident set (VmHWM) in bytes, or -1 where /proc/self/status has none (not Linux).
double procmem_peak_bytes(void);
