"""The SOP Class and Transfer Syntax UIDs the built-in handlers claim.

Names are the standard's keywords (PS3.6 Annex A, as pydicom spells them),
so a test can check every value against pydicom's UID dictionary. The
groups follow what OHIF's SOP class handler modules claim; see
``metastore.displaysets.handlers`` for which handler takes which group.
"""

from __future__ import annotations

# -- image storage (PS3.4 B.5) ------------------------------------------------

ComputedRadiographyImageStorage = "1.2.840.10008.5.1.4.1.1.1"
DigitalXRayImageStorageForPresentation = "1.2.840.10008.5.1.4.1.1.1.1"
DigitalXRayImageStorageForProcessing = "1.2.840.10008.5.1.4.1.1.1.1.1"
DigitalMammographyXRayImageStorageForPresentation = "1.2.840.10008.5.1.4.1.1.1.2"
DigitalMammographyXRayImageStorageForProcessing = "1.2.840.10008.5.1.4.1.1.1.2.1"
DigitalIntraOralXRayImageStorageForPresentation = "1.2.840.10008.5.1.4.1.1.1.3"
DigitalIntraOralXRayImageStorageForProcessing = "1.2.840.10008.5.1.4.1.1.1.3.1"
CTImageStorage = "1.2.840.10008.5.1.4.1.1.2"
EnhancedCTImageStorage = "1.2.840.10008.5.1.4.1.1.2.1"
LegacyConvertedEnhancedCTImageStorage = "1.2.840.10008.5.1.4.1.1.2.2"
UltrasoundMultiFrameImageStorageRetired = "1.2.840.10008.5.1.4.1.1.3"
UltrasoundMultiFrameImageStorage = "1.2.840.10008.5.1.4.1.1.3.1"
MRImageStorage = "1.2.840.10008.5.1.4.1.1.4"
EnhancedMRImageStorage = "1.2.840.10008.5.1.4.1.1.4.1"
EnhancedMRColorImageStorage = "1.2.840.10008.5.1.4.1.1.4.3"
LegacyConvertedEnhancedMRImageStorage = "1.2.840.10008.5.1.4.1.1.4.4"
UltrasoundImageStorageRetired = "1.2.840.10008.5.1.4.1.1.6"
UltrasoundImageStorage = "1.2.840.10008.5.1.4.1.1.6.1"
EnhancedUSVolumeStorage = "1.2.840.10008.5.1.4.1.1.6.2"
SecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7"
MultiFrameSingleBitSecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7.1"
MultiFrameGrayscaleByteSecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7.2"
MultiFrameGrayscaleWordSecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7.3"
MultiFrameTrueColorSecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7.4"
XRayAngiographicImageStorage = "1.2.840.10008.5.1.4.1.1.12.1"
EnhancedXAImageStorage = "1.2.840.10008.5.1.4.1.1.12.1.1"
XRayRadiofluoroscopicImageStorage = "1.2.840.10008.5.1.4.1.1.12.2"
EnhancedXRFImageStorage = "1.2.840.10008.5.1.4.1.1.12.2.1"
XRay3DAngiographicImageStorage = "1.2.840.10008.5.1.4.1.1.13.1.1"
XRay3DCraniofacialImageStorage = "1.2.840.10008.5.1.4.1.1.13.1.2"
BreastTomosynthesisImageStorage = "1.2.840.10008.5.1.4.1.1.13.1.3"
BreastProjectionXRayImageStorageForPresentation = "1.2.840.10008.5.1.4.1.1.13.1.4"
BreastProjectionXRayImageStorageForProcessing = "1.2.840.10008.5.1.4.1.1.13.1.5"
IntravascularOpticalCoherenceTomographyImageStorageForPresentation = "1.2.840.10008.5.1.4.1.1.14.1"
IntravascularOpticalCoherenceTomographyImageStorageForProcessing = "1.2.840.10008.5.1.4.1.1.14.2"
NuclearMedicineImageStorage = "1.2.840.10008.5.1.4.1.1.20"
VLEndoscopicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.1"
VLMicroscopicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.2"
VLSlideCoordinatesMicroscopicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.3"
VLPhotographicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.4"
OphthalmicPhotography8BitImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
OphthalmicPhotography16BitImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
OphthalmicTomographyImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
CornealTopographyMapStorage = "1.2.840.10008.5.1.4.1.1.82.1"
PositronEmissionTomographyImageStorage = "1.2.840.10008.5.1.4.1.1.128"
LegacyConvertedEnhancedPETImageStorage = "1.2.840.10008.5.1.4.1.1.128.1"
EnhancedPETImageStorage = "1.2.840.10008.5.1.4.1.1.130"
RTImageStorage = "1.2.840.10008.5.1.4.1.1.481.1"
RTDoseStorage = "1.2.840.10008.5.1.4.1.1.481.2"

# -- video, microscopy, derived objects, documents, waveforms ------------------

VideoEndoscopicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VideoMicroscopicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.2.1"
VideoPhotographicImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
VLWholeSlideMicroscopyImageStorage = "1.2.840.10008.5.1.4.1.1.77.1.6"
ParametricMapStorage = "1.2.840.10008.5.1.4.1.1.30"
SegmentationStorage = "1.2.840.10008.5.1.4.1.1.66.4"
# Label Map Segmentation Storage (Sup 243, 2024): newer than pydicom's table.
LabelMapSegmentationStorage = "1.2.840.10008.5.1.4.1.1.66.7"
RTStructureSetStorage = "1.2.840.10008.5.1.4.1.1.481.3"
BasicTextSRStorage = "1.2.840.10008.5.1.4.1.1.88.11"
EnhancedSRStorage = "1.2.840.10008.5.1.4.1.1.88.22"
ComprehensiveSRStorage = "1.2.840.10008.5.1.4.1.1.88.33"
Comprehensive3DSRStorage = "1.2.840.10008.5.1.4.1.1.88.34"
EncapsulatedPDFStorage = "1.2.840.10008.5.1.4.1.1.104.1"
TwelveLeadECGWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.1.1"
GeneralECGWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.1.2"
AmbulatoryECGWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.1.3"
General32bitECGWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.1.4"
HemodynamicWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.2.1"
CardiacElectrophysiologyWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.3.1"
ArterialPulseWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.5.1"
RespiratoryWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.6.1"
MultichannelRespiratoryWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.6.2"
RoutineScalpElectroencephalogramWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.7.1"
ElectromyogramWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.7.2"
ElectrooculogramWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.7.3"
SleepElectroencephalogramWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.7.4"
BodyPositionWaveformStorage = "1.2.840.10008.5.1.4.1.1.9.8.1"

# -- transfer syntaxes (PS3.5 8.2.5 to 8.2.8) --------------------------------

MPEG4HP41 = "1.2.840.10008.1.2.4.102"
MPEG4HP41BD = "1.2.840.10008.1.2.4.103"
MPEG4HP422D = "1.2.840.10008.1.2.4.104"
MPEG4HP423D = "1.2.840.10008.1.2.4.105"
MPEG4HP42STEREO = "1.2.840.10008.1.2.4.106"
HEVCMP51 = "1.2.840.10008.1.2.4.107"
HEVCM10P51 = "1.2.840.10008.1.2.4.108"

# -- groups -------------------------------------------------------------------

# What a stack of images shows: OHIF's default handler list (whole-slide
# microscopy has a handler of its own).
IMAGE = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        DigitalMammographyXRayImageStorageForPresentation,
        DigitalMammographyXRayImageStorageForProcessing,
        DigitalIntraOralXRayImageStorageForPresentation,
        DigitalIntraOralXRayImageStorageForProcessing,
        CTImageStorage,
        EnhancedCTImageStorage,
        LegacyConvertedEnhancedCTImageStorage,
        UltrasoundMultiFrameImageStorage,
        UltrasoundMultiFrameImageStorageRetired,
        MRImageStorage,
        EnhancedMRImageStorage,
        EnhancedMRColorImageStorage,
        LegacyConvertedEnhancedMRImageStorage,
        UltrasoundImageStorage,
        UltrasoundImageStorageRetired,
        EnhancedUSVolumeStorage,
        SecondaryCaptureImageStorage,
        MultiFrameSingleBitSecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
        XRayAngiographicImageStorage,
        EnhancedXAImageStorage,
        XRayRadiofluoroscopicImageStorage,
        EnhancedXRFImageStorage,
        XRay3DAngiographicImageStorage,
        XRay3DCraniofacialImageStorage,
        BreastTomosynthesisImageStorage,
        BreastProjectionXRayImageStorageForPresentation,
        BreastProjectionXRayImageStorageForProcessing,
        IntravascularOpticalCoherenceTomographyImageStorageForPresentation,
        IntravascularOpticalCoherenceTomographyImageStorageForProcessing,
        NuclearMedicineImageStorage,
        VLEndoscopicImageStorage,
        VideoEndoscopicImageStorage,
        VLMicroscopicImageStorage,
        VideoMicroscopicImageStorage,
        VLSlideCoordinatesMicroscopicImageStorage,
        VLPhotographicImageStorage,
        VideoPhotographicImageStorage,
        OphthalmicPhotography8BitImageStorage,
        OphthalmicPhotography16BitImageStorage,
        OphthalmicTomographyImageStorage,
        CornealTopographyMapStorage,
        PositronEmissionTomographyImageStorage,
        EnhancedPETImageStorage,
        LegacyConvertedEnhancedPETImageStorage,
        RTImageStorage,
        RTDoseStorage,
    }
)
# Objects whose pixel data is always a video stream.
VIDEO = frozenset(
    {VideoEndoscopicImageStorage, VideoMicroscopicImageStorage, VideoPhotographicImageStorage}
)
# H.264 and HEVC: what a browser's video element plays (MPEG-2 it does not).
VIDEO_TRANSFER_SYNTAXES = frozenset(
    {MPEG4HP41, MPEG4HP41BD, MPEG4HP422D, MPEG4HP423D, MPEG4HP42STEREO, HEVCMP51, HEVCM10P51}
)
SR = frozenset({BasicTextSRStorage, EnhancedSRStorage, ComprehensiveSRStorage})
SR_3D = frozenset({Comprehensive3DSRStorage})
SEGMENTATION = frozenset({SegmentationStorage, LabelMapSegmentationStorage})
RTSTRUCT = frozenset({RTStructureSetStorage})
PARAMETRIC_MAP = frozenset({ParametricMapStorage})
WHOLE_SLIDE = frozenset({VLWholeSlideMicroscopyImageStorage})
PDF = frozenset({EncapsulatedPDFStorage})
# ECG and the other physiological waveforms a chart shows (PS3.3 A.34);
# audio waveforms are not among them.
WAVEFORM = frozenset(
    {
        TwelveLeadECGWaveformStorage,
        GeneralECGWaveformStorage,
        AmbulatoryECGWaveformStorage,
        General32bitECGWaveformStorage,
        HemodynamicWaveformStorage,
        CardiacElectrophysiologyWaveformStorage,
        ArterialPulseWaveformStorage,
        RespiratoryWaveformStorage,
        MultichannelRespiratoryWaveformStorage,
        RoutineScalpElectroencephalogramWaveformStorage,
        ElectromyogramWaveformStorage,
        ElectrooculogramWaveformStorage,
        SleepElectroencephalogramWaveformStorage,
        BodyPositionWaveformStorage,
    }
)
