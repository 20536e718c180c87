"""Text of slurm.conf and slurmdbd.conf for a one-node test cluster that lives under one folder."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    slurmctld: int = 6817
    slurmd: int = 6818
    slurmdbd: int = 6819
    mariadb: int = 3307  # not 3306: leaves a system MariaDB alone

    def all(self) -> list[int]:
        return [self.slurmctld, self.slurmd, self.slurmdbd, self.mariadb]


def node_line(slurmd_c_output: str) -> str:
    """`slurmd -C`'s NodeName line with RealMemory cut to 90% (the OS keeps the rest)."""
    line = slurmd_c_output.strip().splitlines()[0]
    mem = int(re.search(r"RealMemory=(\d+)", line).group(1))
    return re.sub(r"RealMemory=\d+", f"RealMemory={mem * 9 // 10}", line)


def slurm_conf(*, cluster: str, host: str, node: str, partition: str, root: Path, ports: Ports) -> str:
    """Everything on 127.0.0.1, root runs the daemons, accounting through slurmdbd (the plugin polls sacct)."""
    return f"""\
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports.slurmctld}
SlurmdPort={ports.slurmd}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports.slurmdbd}
JobAcctGatherType=jobacct_gather/linux
AccountingStoreFlags=job_comment
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1000
"""


def slurmdbd_conf(*, root: Path, ports: Ports, db_user: str, db_password: str) -> str:
    return f"""\
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports.slurmdbd}
SlurmUser=root
LogFile={root}/log/slurmdbd.log
PidFile={root}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports.mariadb}
StorageUser={db_user}
StoragePass={db_password}
StorageLoc=slurm_acct_db
"""
