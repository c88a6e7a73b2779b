"""OpenMalaria's survey measures by number: the third column of output.txt.

Transcribed from `defineOutMeasures()` in model/mon/OutputMeasures.h of SwissTPH/openmalaria
(last changed in b277f4f8, August 2025; schema 48), leaving out the obsolete ones, which are
never written. OpenMalaria promises never to give an existing number to a different measure
("Don't ever make an existing numerical identifier point to a new/different output
measure"), so the table only grows: an unknown number is a newer measure, reported with an
empty name and no rate.

A measure is a *count* here when OpenMalaria stores it as an integer and reports it per
human age group (`humanAC`, `humanACG`, `humanACP` with isDouble false, and every
`humanDeploy`): a number of people, episodes, infections, treatments or deployments, which
divided by nHost (measure 0) of the same survey and age group is a rate per person.
Floating-point measures (sums of logs, expected values, EIRs) and the per-species vector
measures are not counts: adding them up across runs is still meaningful, dividing them by
the population is not.
"""

from __future__ import annotations

NHOST = 0

# Number -> (name used in the scenario's <SurveyOptions>, whether it is a count).
MEASURES: dict[int, tuple[str, bool]] = {
    0: ("nHost", True),
    1: ("nInfect", True),
    2: ("nExpectd", False),
    3: ("nPatent", True),
    4: ("sumLogPyrogenThres", False),
    5: ("sumlogDens", False),
    6: ("totalInfs", True),
    7: ("nTransmit", False),
    8: ("totalPatentInf", True),
    10: ("sumPyrogenThresh", False),
    11: ("nTreatments1", True),
    12: ("nTreatments2", True),
    13: ("nTreatments3", True),
    14: ("nUncomp", True),
    15: ("nSevere", True),
    16: ("nSeq", True),
    17: ("nHospitalDeaths", True),
    18: ("nIndDeaths", True),
    19: ("nDirDeaths", True),
    20: ("nEPIVaccinations", True),
    21: ("allCauseIMR", False),
    22: ("nMassVaccinations", True),
    23: ("nHospitalRecovs", True),
    24: ("nHospitalSeqs", True),
    26: ("annAvgK", False),
    27: ("nNMFever", True),
    30: ("innoculationsPerAgeGroup", False),
    31: ("Vector_Nv0", False),
    32: ("Vector_Nv", False),
    33: ("Vector_Ov", False),
    34: ("Vector_Sv", False),
    35: ("inputEIR", False),
    36: ("simulatedEIR", False),
    41: ("Clinical_FirstDayDeaths", True),
    42: ("Clinical_HospitalFirstDayDeaths", True),
    43: ("nNewInfections", True),
    44: ("nMassITNs", True),
    45: ("nEPI_ITNs", True),
    46: ("nMassIRS", True),
    52: ("nMDAs", True),
    53: ("nNmfDeaths", True),
    55: ("nMassScreenings", True),
    56: ("nMassGVI", True),
    57: ("nCtsIRS", True),
    58: ("nCtsGVI", True),
    59: ("nCtsMDA", True),
    60: ("nCtsScreenings", True),
    61: ("nSubPopRemovalTooOld", True),
    62: ("nSubPopRemovalFirstEvent", True),
    63: ("nLiverStageTreatments", True),
    64: ("nTreatDiagnostics", True),
    65: ("nMassRecruitOnly", True),
    66: ("nCtsRecruitOnly", True),
    67: ("nTreatDeployments", True),
    68: ("sumAge", False),
    69: ("nInfectByGenotype", True),
    70: ("nPatentByGenotype", True),
    71: ("logDensByGenotype", False),
    72: ("nHostDrugConcNonZero", True),
    73: ("sumLogDrugConcNonZero", False),
    74: ("expectedDirectDeaths", False),
    75: ("expectedHospitalDeaths", False),
    76: ("expectedIndirectDeaths", False),
    77: ("expectedSequelae", False),
    78: ("expectedSevere", False),
    79: ("innoculationsPerVector", False),
    80: ("nCMDTReport", True),
    81: ("nSevereWithoutComorbidities", True),
    82: ("expectedSevereWithoutComorbidities", False),
    1001: ("nInfect_Imported", True),
    1003: ("nPatent_Imported", True),
    1006: ("totalInfs_Imported", True),
    1008: ("totalPatentInf_Imported", True),
    1014: ("nUncomp_Imported", True),
    1043: ("nNewInfections_Imported", True),
    2001: ("nInfect_Introduced", True),
    2003: ("nPatent_Introduced", True),
    2006: ("totalInfs_Introduced", True),
    2008: ("totalPatentInf_Introduced", True),
    2014: ("nUncomp_Introduced", True),
    2036: ("simulatedEIR_Introduced", False),
    2043: ("nNewInfections_Introduced", True),
    3001: ("nInfect_Indigenous", True),
    3003: ("nPatent_Indigenous", True),
    3006: ("totalInfs_Indigenous", True),
    3008: ("totalPatentInf_Indigenous", True),
    3014: ("nUncomp_Indigenous", True),
    3036: ("simulatedEIR_Indigenous", False),
    3043: ("nNewInfections_Indigenous", True),
}


def name(measure: int) -> str:
    """The measure's name in scenarios, or "" for a number this table does not know."""
    known = MEASURES.get(measure)
    return known[0] if known else ""


def is_count(measure: int) -> bool:
    known = MEASURES.get(measure)
    return known[1] if known else False
